//! hookfleet-worker: the worker fleet (being written).
