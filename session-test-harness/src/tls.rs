//! A throwaway certificate authority for TLS tests.

#[allow(unused_imports)]
use super::*;

/// A throwaway certificate authority and a server certificate it issued for 127.0.0.1, as PEM
/// files in one directory (made by [`TestCertificates::make`]).
#[derive(Debug, Clone)]
pub struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    /// Makes the CA and the server certificate in `dir` (created if missing) with `openssl`,
    /// valid for two days.
    pub fn make(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let script = r#"
            set -e
            cd "$1"
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=session-test-ca \
                -keyout ca.key -out ca.crt 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
                -keyout server.key -out server.csr 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                -extfile san.ext -out server.crt 2>/dev/null
            chmod 644 server.key
        "#;
        let status = Command::new("sh")
            .args(["-c", script, "certificates"])
            .arg(dir)
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "making test certificates failed ({status}); is openssl installed?"
            )));
        }
        Ok(TestCertificates {
            dir: dir.to_owned(),
        })
    }

    /// The CA certificate, for clients to trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server certificate (for 127.0.0.1).
    pub fn server_certificate(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}
