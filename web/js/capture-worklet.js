// Confab Web's microphone tap for browsers without MediaStreamTrackProcessor: an
// AudioWorklet that posts each 128-frame block of the first channel to the page, which
// gathers them into 20 ms frames for the Opus encoder (js/voice.mjs).
class ConfabCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("confab-capture", ConfabCapture);
