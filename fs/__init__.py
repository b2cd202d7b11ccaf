"""The gobi FUSE client (installed as ``gobi.fs``): a vault mounted as a folder."""
