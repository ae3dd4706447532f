"""The monitored VMs' desired states, kept in one JSON file under ``[agent] state_dir``.

The file survives restarts, so monitoring goes on where it was: ``{"format": 1, "sections":
{section: {vm_id: {"status", "flavor", "vm_name", "compliant"}}}}``. Every change rewrites it
whole, atomically (a temporary file in the same folder, fsync, rename), so a crash leaves the
old file or the new one, never half of one. A file that cannot be parsed is moved aside
(``.unreadable``) with an error line, and monitoring starts empty rather than not at all.

Which VMs requests are changing right now (``changing``) is kept beside, in memory only: it
describes requests of this process, which end with it. When the last request changing a VM
ends, the ``on_settled`` listeners (the compliance monitor) hear of it, outside the lock.
"""

import json
import logging
import os
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..conffile import replace_atomically
from ..desired import DesiredState
from ..errors import ConfigError

LOG = logging.getLogger(__name__)

SettledListener = Callable[[str, str], None]  # section, VM

FILE_NAME = "monitored.json"
FORMAT = 1


@dataclass(frozen=True)
class Monitored:
    """One monitored VM: its desired state, and whether it was compliant when last judged."""

    desired: DesiredState
    compliant: bool = True


class DesiredStateStore:
    """Thread-safe; implements ``desired.DesiredStateRecorder`` for the controller."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, FILE_NAME)
        self._lock = threading.Lock()
        self._changes: "Counter[Tuple[str, str]]" = Counter()  # (section, VM) -> requests changing it now
        self._settled_listeners: List[SettledListener] = []
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"[agent] state_dir {state_dir}: cannot create it ({err.strerror})") from None
        self._sections: Dict[str, Dict[str, Monitored]] = self._load()

    # -- the recorder (the controller's side) -------------------------------------------------

    def record(self, section: str, vm_id: str, desired: DesiredState) -> None:
        with self._lock:
            self._sections.setdefault(section, {})[vm_id] = Monitored(desired)
            self._save()

    def follow(self, section: str, vm_id: str, desired: DesiredState) -> None:
        with self._lock:
            known = self._sections.get(section, {}).get(vm_id)
            if known is None or known.desired == desired:
                return
            self._sections[section][vm_id] = Monitored(desired, known.compliant)
            self._save()

    def forget(self, section: str, vm_id: str) -> None:
        with self._lock:
            if self._sections.get(section, {}).pop(vm_id, None) is None:
                return
            if not self._sections[section]:
                del self._sections[section]
            self._save()

    def knows(self, section: str, vm_id: str) -> bool:
        with self._lock:
            return vm_id in self._sections.get(section, {})

    @contextmanager
    def changing(self, section: str, vm_id: str) -> Iterator[None]:
        key = (section, vm_id)
        with self._lock:
            self._changes[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._changes[key] -= 1
                settled = not self._changes[key]
                if settled:
                    del self._changes[key]
            if settled:
                self._tell_settled(section, vm_id)

    def _tell_settled(self, section: str, vm_id: str) -> None:
        """On the thread of the request that ended, outside the lock; a listener's failure must not
        turn the request's reply into an error."""
        for listener in self._settled_listeners:
            try:
                listener(section, vm_id)
            except Exception:
                LOG.exception("the request on VM %s of '%s' ended; judging the VM then failed", vm_id, section)

    # -- the compliance monitor's side --------------------------------------------------------

    def on_settled(self, listener: SettledListener) -> None:
        """Call ``listener(section, vm_id)`` when the last request changing the VM ended (after it
        handed over the VM's desired state), on that request's thread, outside the lock."""
        self._settled_listeners.append(listener)

    def get(self, section: str, vm_id: str) -> Optional[Monitored]:
        with self._lock:
            return self._sections.get(section, {}).get(vm_id)

    def monitored(self, section: str) -> Dict[str, Monitored]:
        with self._lock:
            return dict(self._sections.get(section, {}))

    def settled_vms(self, section: str) -> Dict[str, Monitored]:
        """The monitored VMs of ``section`` that no request is changing."""
        with self._lock:
            return {vm_id: entry for vm_id, entry in self._sections.get(section, {}).items()
                    if (section, vm_id) not in self._changes}

    def standing(self, section: str, vm_id: str) -> Tuple[bool, Optional[Monitored]]:
        """(whether a request is changing the VM, its entry) read together (one lock: no torn read): a
        view of a VM under change is never judged against a state the request is replacing."""
        with self._lock:
            return (section, vm_id) in self._changes, self._sections.get(section, {}).get(vm_id)

    def set_compliant(self, section: str, vm_id: str, compliant: bool) -> None:
        with self._lock:
            known = self._sections.get(section, {}).get(vm_id)
            if known is None or known.compliant == compliant:
                return
            self._sections[section][vm_id] = Monitored(known.desired, compliant)
            self._save()

    # -- the file -----------------------------------------------------------------------------

    def _load(self) -> Dict[str, Dict[str, Monitored]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
            return {section: {vm_id: Monitored(DesiredState.from_dict(entry), bool(entry.get("compliant", True)))
                              for vm_id, entry in vms.items()}
                    for section, vms in document["sections"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.path + ".unreadable"
            LOG.error("%s cannot be read (%s): moved to %s; no VM is monitored until requests ask again",
                      self.path, err, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return {}

    def _save(self) -> None:
        document: Dict[str, Any] = {"format": FORMAT, "sections": {
            section: {vm_id: {**entry.desired.as_dict(), "compliant": entry.compliant} for vm_id, entry in vms.items()}
            for section, vms in self._sections.items()}}
        try:
            replace_atomically(self.path, json.dumps(document, indent=1, sort_keys=True))
        except OSError as err:  # monitoring goes on in memory; the next change tries the file again
            LOG.error("cannot write %s (%s): monitored states kept in memory only", self.path, err.strerror or err)
