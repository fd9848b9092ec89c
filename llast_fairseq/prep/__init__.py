"""Data preparation: CoVoST 2 and FLEURS into fairseq S2T manifests, and the demo's corpus."""
