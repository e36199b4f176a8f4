"""pyattn inside other libraries. Each integration is a submodule imported
on demand (it imports its library): ``pyattn.integrations.transformers``."""
