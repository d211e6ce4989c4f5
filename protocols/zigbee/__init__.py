"""zigbee"""
