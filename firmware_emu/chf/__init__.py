"""The Communications Hub Function (CHF): device log, HAN routing, sub-GHz radio; GBT lives in protocols.gbcs.gbt."""
