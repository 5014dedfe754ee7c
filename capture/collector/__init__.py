"""The dataset builder's collector: studies, enrollment, resumable uploads, consent registry."""
