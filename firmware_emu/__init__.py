"""Device behaviour (sans-IO state machines), the fleet, and the CLI."""
