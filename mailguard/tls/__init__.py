"""The interception CA, leaf certificates, and the TLS contexts of both legs.

Modules (each imports ``cryptography``; nothing here is imported by the CLI at start-up):

- ``ca``             create a CA (pure); ``CertificateAuthority``
- ``castore``        the CA on disk: ``CAStore(state_dir).init() / active() / rotate() / all()``
- ``leaf``           ``issue_leaf`` (pure) and ``LeafMinter.leaf_for(names, upstream_cert_der)``
- ``contexts``       client-facing: ``ClientFacingTLS.from_state(...).context(default_names, der)``
- ``upstream``       upstream: ``UpstreamTLS.from_settings(settings, state_dir)``, ``.context``, ``.judge``
- ``upstream_check`` ``CertProblem``, ``UpstreamCheck``, ``UpstreamCertificateError``
- ``anchors``        system roots + ``trusted-ca-file`` minus mailguard's own CAs
- ``ciphers``        the protocol floor and suites shared by both legs
- ``trust``          system trust-store install / uninstall with a record
- ``export``         PEM / DER / certificate-only PKCS#12
- ``naming``, ``files``  host-name rules; atomic 0600 writes
"""
