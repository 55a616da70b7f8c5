"""Pure domain: standard library only, no IO, no clock, no logging."""
