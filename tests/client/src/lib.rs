//! Client-side integration tests live in tests/; see tests/client/tests.
