//! pie's engine (being written).
