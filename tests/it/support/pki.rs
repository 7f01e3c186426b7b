//! Certificates made at test time (rcgen): a root CA, an intermediate it signs, and server and
//! client certificates the intermediate signs — the full chains real deployments have.

/// A root and an intermediate CA; leaf certificates are signed by the intermediate.
pub struct TestCa {
    root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    intermediate: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A fresh root and intermediate, both named after `name`.
    pub fn new(name: &str) -> TestCa {
        let ca_params = |cn: String| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
            params
        };
        let root = rcgen::CertifiedIssuer::self_signed(ca_params(format!("{name} root CA")), rcgen::KeyPair::generate().unwrap()).unwrap();
        let intermediate =
            rcgen::CertifiedIssuer::signed_by(ca_params(format!("{name} intermediate CA")), rcgen::KeyPair::generate().unwrap(), &root).unwrap();
        TestCa { root, intermediate }
    }

    /// The root certificate (PEM): what clients trust.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A server certificate for `localhost` and `127.0.0.1`: the chain (leaf, then intermediate)
    /// and the key, PEM.
    pub fn server_pair(&self, common_name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.intermediate).unwrap();
        (format!("{}{}", cert.pem(), self.intermediate.pem()), key.serialize_pem())
    }

    /// A client certificate (`clientAuth`) for `common_name` of `organization`: the chain and
    /// the key, PEM.
    pub fn client_pair(&self, common_name: &str, organization: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, organization);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.intermediate).unwrap();
        (format!("{}{}", cert.pem(), self.intermediate.pem()), key.serialize_pem())
    }

    /// A root store trusting this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.der().clone()).unwrap();
        roots
    }
}
