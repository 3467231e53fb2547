"""Finding candidate references for a query: sources behind one contract, fused in one place."""
