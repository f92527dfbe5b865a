"""What every stage needs of a masked network: gate families and their kernels, mask sources,
channel hooks, masked layers, the surgery that installs them, the 2:4 and channel structure,
dead paths, and folding and shrinking. Below `search`, which trains it, and `export`, which
ships it."""
