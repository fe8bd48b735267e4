//! The adapter and end-to-end tests, in one test binary: it is linked once, and the tests of all
//! files share its threads, so those that wait on the emulators overlap those that compute.
//! `make test` starts the local stack first; each test uses its own names.

mod adapters;
mod cluster_user_data;
mod lifecycle;
mod operations;
mod runner_script;
mod runs;
