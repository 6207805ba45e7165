"""An example `dg` project whose only definitions come from stagecopy's component."""
