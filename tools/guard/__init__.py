"""The request guard: every request the local AWS emulator receives is checked against AWS's
service models and documented limits (what AWS would refuse); the emulator server it runs in."""
