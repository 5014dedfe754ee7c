"""The player's side of collection: enrollment, resumable tus uploads, the revocation outbox."""
