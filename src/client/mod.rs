//! Client library (filled below).
