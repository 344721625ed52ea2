//! Helpers shared by the integration tests: CPU choice and the in-process
//! mock. Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use loadtest::mock::{self, MockConfig, MockServer};
use loadtest::rt;

/// (generator CPUs, mock CPUs): the first and the last available CPU, the
/// same one on a single-CPU machine.
pub fn cpus() -> (Vec<usize>, Vec<usize>) {
    let allowed = rt::allowed_cpus();
    (vec![allowed[0]], vec![*allowed.last().unwrap()])
}

/// Starts the mock on a free loopback port, on the mock CPUs, after
/// `tune` adjusts its settings.
pub fn start_mock(tune: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig {
        cpus: cpus().1,
        ..MockConfig::default()
    };
    tune(&mut config);
    mock::start("127.0.0.1:0".parse().unwrap(), config).expect("mock starts")
}
