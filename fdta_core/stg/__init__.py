"""STG: FDTA's style transfer generator (DCFace's dual-condition mixer)."""
