"""What the change feed asks the cloud, and how the answers become events (no AMQP, no threads).

- ``poll``: ONE paged ``changes-since`` list per interval, from the watermark (Nova's own latest
  ``updated`` time, never this host's clock) minus ``changes.WATERMARK_OVERLAP``: Nova stamps
  ``updated`` on whichever host made the change, so a change stamped a little earlier than the
  watermark may commit later; the overlap lists it again and the tracker drops what it already
  reported. While Nova listed no time yet (a project with no VM), the list starts at the earliest
  time, so the deleted records show there too. A listed VM whose status and ``updated`` are those
  already known (or whose deletion was reported, at that ``updated``) is not even looked at, so an
  idle interval costs that one request and no flavor or console look-up. Deleted VMs are listed
  (status DELETED) as long as Nova keeps their records: one the tracker never knew came and went
  between two polls, and is reported as created and deleted.
- ``reconcile``: the full paged list, at start and every ``reconcile_interval``: a VM the tracker
  knows that is missing from it was deleted (Nova prunes deleted records; a notification may be
  lost), and a change that does not move ``updated`` (metadata, tags, addresses) shows here.
- ``refresh``: ONE read of one VM (``GET /servers/{id}``), for a source that knows which VM
  changed (a notification); 404 means deleted.
"""

from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable

from .changes import ChangeTracker
from .drivers.base import CloudDriver, Server
from .errors import NotFound

Event = Dict[str, Any]
Views = Dict[str, Dict[str, Any]]


@runtime_checkable
class ViewSource(Protocol):
    """What the feed needs of the controller: its sections, their drivers, and a VM's details keys."""

    def event_sections(self) -> List[str]:
        """The valid sections, whose VMs are watched."""

    def driver(self, res_id: str) -> CloudDriver:
        """The section's driver (its session and caches)."""

    def vm_view(self, res_id: str, server: Server) -> Dict[str, Any]:
        """The VM-details keys of ``server``, with no request (the console only as already known)."""


class SectionPoller:
    """The polling of one section, feeding its tracker."""

    def __init__(self, section: str, source: ViewSource, tracker: ChangeTracker) -> None:
        self.section = section
        self.tracker = tracker
        self._source = source

    def poll(self) -> List[Event]:
        """The events since the last poll; a section whose first full list did not run yet is reconciled instead."""
        if not self.tracker.baselined:
            return self.reconcile()[0]
        since = self.tracker.since
        undated = self.tracker.undated_deletions()  # before the list: their deletions are committed
        servers = self._source.driver(self.section).list_servers(since)
        events = [event for server in servers if not self.tracker.unchanged(server.id, server.status, server.updated)
                  for event in self.tracker.observe_listed(self._source.vm_view(self.section, server))]
        self.tracker.note_updated(server.updated for server in servers)
        self.tracker.listed_since(since, (server.id for server in servers), undated)
        return events

    def reconcile(self) -> Tuple[List[Event], Views]:
        """The events of a full list (deletions of VMs it lacks included), and every VM's view by id."""
        servers = self._source.driver(self.section).list_servers()
        views = {server.id: self._source.vm_view(self.section, server) for server in servers}
        events = self.tracker.reconcile(views)
        self.tracker.note_updated(server.updated for server in servers)
        return events, views

    def refresh(self, vm_id: str) -> Optional[Event]:
        """The event of one VM read now (ONE request), or None when it did not change (or the section's
        first full list, which records what exists, has not run yet)."""
        if not self.tracker.baselined:
            return None
        driver = self._source.driver(self.section)
        try:
            server = driver.get_server(vm_id)
        except NotFound:
            return self.tracker.observe_deleted(vm_id)
        return self.tracker.observe(self._source.vm_view(self.section, server))
