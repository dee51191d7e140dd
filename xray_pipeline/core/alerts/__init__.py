"""Notifications of the incidents' changes: the outbox, what each target gets, and a local
receiver."""
