"""What a recording is on disk, and what is made of it afterwards.

The formats, which live capture, the control plane and the exporter all import and
which import none of them (no aiortc, asyncio or aiohttp): ``track_index`` (a
recording's ``recording.json``), ``paths`` (the session directory and its ids), ``webm``
(the live WebM writer), ``repair`` (the remux that makes a track file final),
``bitstream`` (codec syntax). Built on them: the case file (``archive``, ``verify``,
``addendum``) and the composite export (``compose``, ``export`` and their helpers).
Live capture (RTP to frames, the writer thread) is the subpackage ``live``, the only
part that imports ``media_server`` (nothing else here imports ``live``).
"""
