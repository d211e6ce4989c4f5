"""The fleet: many emulated devices served from storage over WAN adapters (TCP, MQTT) (issue 6)."""
