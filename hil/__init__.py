"""Everything that faces a device from outside: serial bridge, device-under-test drivers, conformance runner."""
