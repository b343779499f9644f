"""Random-weight models in the real checkpoint layouts, built locally from configs (no download).

The tests build tiny ones; the GPU benchmarks build full-size ones (FLUX.1-dev, Arc2Face, IR-101) to measure
speed and memory where the real weights cannot be fetched. Every directory written here loads through the same
`from_pretrained` / checkpoint code a real download does.
"""
