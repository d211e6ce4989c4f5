"""ASN.1 DER payloads of GBCS (CS02-CS09, CCS08, GCS28/59/62 and the ASN.1 alerts).

- `der`: the generic DER TLV layer (`DerTlv` construct, strict DER, the GBCS `82 00 nn` length form);
- `schema`: named types declared over the DER tree (`Seq`, `SeqOf`, `Choice`, `Integer`, ...);
- `payloads`: the GBCS declarations and `decode_asn1` / `encode_asn1` (what `protocols.gbcs.message` calls);
- `certinfo`: informational summaries of the X.509 certificates and PKCS#10 requests inside CS02/CS03 payloads.

The JSON form is described in `JSON-FORMAT.md` beside this file.
"""
