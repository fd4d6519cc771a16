"""Live capture: a media node's recording of each track as it is received.

The media server calls it through the small Protocols of ``media_server.tap`` (a packet,
a sender report, a track's end; start and stop a room's recording) and knows nothing of
files. Here: ``room_tap`` (the event-loop side of one room's recording: enqueue, never
wait), ``commands`` (what goes through the queue), ``recorder`` (the node's queue, its
writer thread and its repair thread), ``writer`` (what the writer thread does: track indexes
and track files), ``track_capture`` (one track's RTP to frames to file, no transcoding),
``reorder`` (sequence order back from arrival order). It writes through the formats of
``recording`` (``track_index``, ``paths``, ``webm``, ``repair``, ``bitstream``).

This is the only part of ``recording`` allowed to import ``media_server`` (its RTP wire
format, its types, aiortc through its adapter). The case file and the exporter
(``recording.archive``, ``verify``, ``compose``, ``export``...) never import it, so an
export or a replay never loads the SFU or aiortc.
"""
