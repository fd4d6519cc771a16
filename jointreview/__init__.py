"""The composition root: the app factory, the ``jointreview`` command and the wiring
between the control plane (``signaling``), the SFU (``media_server``) and recording
(``recording``). It is the one package that imports all of them."""
