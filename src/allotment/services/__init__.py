"""Services: orchestration only. Read through repositories, call the pure domain, write back."""
