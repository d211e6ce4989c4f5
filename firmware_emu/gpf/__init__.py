"""The Gas Proxy Function (GPF) of the comms hub: answers GSME reads from its mirror of the gas meter."""
