"""nova-compute's virt driver in the devcloud: Nova's fake driver, plus snapshots that reach Glance.

Nova's ``FakeDriver.snapshot`` only sets the task state: it uploads nothing, so the image Nova
created in Glance stays ``queued`` forever and a client waiting for ``active`` never gets it.
This driver uploads a few bytes through Nova's own Glance client, as the libvirt driver does
with the disk, so the real Glance takes the image through ``saving`` to ``active``.
"""

import io

from nova.image import glance
from nova.virt import fake

SNAPSHOT_BYTES = b"devcloud snapshot of a fake disk\n" * 32


class SnapshottingFakeDriver(fake.FakeDriverWithoutFakeNodes):
    """``fake.FakeDriverWithoutFakeNodes`` (stable node id) whose snapshots become active images."""

    def snapshot(self, context, instance, image_id, update_task_state):
        super().snapshot(context, instance, image_id, update_task_state)
        metadata = {"disk_format": "raw", "container_format": "bare"}
        glance.API().update(context, image_id, metadata, data=io.BytesIO(SNAPSHOT_BYTES), purge_props=False)
