"""Where the bytes come from: Mirage's table (mirage), the grism repositories (grism), a CRDS context (crds)."""
