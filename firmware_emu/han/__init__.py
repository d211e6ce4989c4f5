"""The virtual HAN between the comms hub and the HAN devices: `network` (join, routing, sleepy polling, APS
fragmentation and retries, loss/latency injection), `tunnel` (GBCS over the ZSE Tunneling cluster),
`install_code` (install code -> link key). Independent of the device classes: bytes, EUIs and times only."""
