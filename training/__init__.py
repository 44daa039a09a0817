"""Training the reference models from their raw data (build host; `edgeboost train`).

Apart from compile/: training makes a model, compiling turns any model into a bundle, and
neither needs the other.
"""
