"""The lake's storage: partition I/O and manifests, and the layout rules every layer shares."""
