// AudioWorklet: microphone -> mono -> resampled to the model's rate -> int16 chunks posted to
// the page. Down-sampling averages the input samples of each output interval (a box filter:
// cheap anti-aliasing); up-sampling interpolates linearly. Each chunk goes with `end`, the
// AudioContext time (s) of the input sample that completed it: the page's capture clock for
// measuring detection latency.
class KwsCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.ratio = sampleRate / (o.targetRate || 16000); // input samples per output sample
    this.chunk = o.chunkSamples || 640;
    this.out = new Int16Array(this.chunk);
    this.n = 0;
    this.pos = 0; // position of the next output sample, in input samples from `prev`
    this.prev = 0; // last input sample of the previous block
    this.acc = 0; this.accN = 0;
  }
  emit(v, end) {
    const s = Math.max(-1, Math.min(1, v));
    this.out[this.n++] = Math.round(s * 32767);
    if (this.n === this.chunk) {
      this.port.postMessage({ pcm: this.out.buffer, end }, [this.out.buffer]);
      this.out = new Int16Array(this.chunk);
      this.n = 0;
    }
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const len = input[0].length;
    const mono = new Float32Array(len);
    for (const ch of input) for (let i = 0; i < len; i++) mono[i] += ch[i] / input.length;
    if (this.ratio >= 1) {
      for (let i = 0; i < len; i++) {
        this.acc += mono[i]; this.accN++;
        this.pos += 1;
        if (this.pos >= this.ratio) {
          this.emit(this.acc / this.accN, currentTime + (i + 1) / sampleRate);
          this.acc = 0; this.accN = 0; this.pos -= this.ratio;
        }
      }
    } else {
      // pos runs over [prev, mono[0], mono[1], ...]: index 0 is prev
      while (this.pos < len) {
        const i = Math.floor(this.pos), f = this.pos - i;
        const a = i === 0 ? this.prev : mono[i - 1], b = mono[i];
        this.emit(a + (b - a) * f, currentTime + i / sampleRate);
        this.pos += this.ratio;
      }
      this.pos -= len;
      this.prev = mono[len - 1];
    }
    return true;
  }
}
registerProcessor("kws-capture", KwsCapture);
