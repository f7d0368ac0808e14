"""Method-independent core: approximators (reuse, taylor, foca, hermite) for skipped outputs."""
