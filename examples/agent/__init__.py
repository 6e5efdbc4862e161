"""An example agent: a travel-booking assistant that survives crashes (see README)."""
