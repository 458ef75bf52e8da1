"""Audio decoding (libsndfile, FFmpeg via PyAV), resampling, windowing and Kaldi fbank: no Apache Beam."""
