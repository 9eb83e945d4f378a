//! Wall-clock sanity and the monotonic schedule clock.
