"""The gas meter (GSME): a GBCS device whose remote-party payloads are GBZ (ZigBee SE ZCL) or ASN.1."""
