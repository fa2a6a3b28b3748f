"""Optional adapters for the leasecron kernel (installed as `leasecron.adapters`).

An adapter plugs a storage engine or a web framework into the kernel's protocols (`Store`,
`Dispatcher`) and may import optional dependencies (installed with the `postgres` and `server`
extras). The kernel never imports this package.
"""
