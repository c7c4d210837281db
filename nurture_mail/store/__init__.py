"""Every query the engine runs, grouped by area: the pool, the ledger, the inbox, reports."""
