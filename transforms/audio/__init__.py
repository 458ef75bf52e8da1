"""Audio decoding, resampling, windowing and Kaldi fbank: numpy/soundfile/soxr only, no Apache Beam."""
