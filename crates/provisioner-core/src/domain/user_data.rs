//! What EC2 is given as a run's user-data: the rendered script, gzip-compressed. EC2 takes at most
//! 16 KB of user-data before base64, and a TEST script alone is more than that; cloud-init sees the
//! gzip header and unpacks the script before running it. Compressed, every plan stays under
//! [`USER_DATA_BUDGET`] (80 % of the limit) for the longest valid values, which a test holds them
//! to, so growth is noticed long before a launch is refused.

use std::fmt;
use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::Error;

/// EC2 user guide, "Instance user data": "User data is limited to 16 KB, in raw form, before it is
/// base64-encoded."
pub const EC2_USER_DATA_LIMIT: usize = 16 * 1024;
/// What every plan's user-data must stay under for the longest valid values (random characters
/// at every setting's longest). 80 %: the suites' report reader took the TEST plan from 12.1 to
/// 12.9 KB there (10.6 KB with the shipped settings); the rest of the limit is headroom.
pub const USER_DATA_BUDGET: usize = EC2_USER_DATA_LIMIT * 4 / 5;

/// A run's script, compressed as EC2 receives it (before base64).
#[derive(Clone, PartialEq, Eq)]
pub struct UserData {
    compressed: Vec<u8>,
    script_len: usize,
}

impl UserData {
    /// Compresses `script`; refused when even compressed it is over EC2's limit.
    pub fn compress(script: &str) -> Result<UserData, Error> {
        // The gzip header's time is 0, so the same script is the same user-data.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let compressed = encoder
            .write_all(script.as_bytes())
            .and_then(|()| encoder.finish())
            .map_err(|error| Error::invalid(format!("the run's user-data could not be compressed: {error}")))?;
        if compressed.len() > EC2_USER_DATA_LIMIT {
            return Err(Error::invalid(format!(
                "the run's user-data is {} bytes compressed, over EC2's limit of {EC2_USER_DATA_LIMIT}; shorten the \
                 plan in clusters/catalog.yaml",
                compressed.len()
            )));
        }
        Ok(UserData { compressed, script_len: script.len() })
    }

    /// The bytes EC2 counts against its limit.
    pub fn as_bytes(&self) -> &[u8] {
        &self.compressed
    }

    pub fn len(&self) -> usize {
        self.compressed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.compressed.is_empty()
    }

    /// The size of the script before compression.
    pub fn script_len(&self) -> usize {
        self.script_len
    }

    /// The script, as cloud-init unpacks it.
    pub fn script(&self) -> String {
        let mut script = String::new();
        GzDecoder::new(self.compressed.as_slice())
            .read_to_string(&mut script)
            .expect("user-data is gzip of UTF-8, as compress made it");
        script
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData({} bytes gzip of a {}-byte script)", self.compressed.len(), self.script_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_comes_back_as_it_went_in_and_always_compresses_alike() {
        let script = "#!/bin/bash\necho 'hello'\n".repeat(50);
        let user_data = UserData::compress(&script).unwrap();
        assert_eq!(user_data.script(), script);
        assert_eq!(user_data.as_bytes()[..2], [0x1f, 0x8b], "the gzip magic cloud-init recognises");
        assert!(user_data.len() < script.len());
        assert_eq!(UserData::compress(&script).unwrap(), user_data);
    }

    #[test]
    fn a_script_over_the_limit_even_compressed_is_refused() {
        // Incompressible: every byte from a generator, hex-encoded.
        let mut rng = fastrand::Rng::with_seed(7);
        let script: String = (0..3 * EC2_USER_DATA_LIMIT).map(|_| format!("{:02x}", rng.u8(..))).collect();
        let error = UserData::compress(&script).unwrap_err();
        assert!(error.to_string().contains("over EC2's limit of 16384"), "{error}");
    }
}
