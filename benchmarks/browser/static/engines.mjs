// The two in-browser runtimes, loaded from the local /assets/ folder (never a CDN):
// onnxruntime-web's wasm backend for .onnx/.ort files (WebGPU is left out: its DequantizeLinear
// kernels are wrong for int8 QDQ files) and MediaPipe Tasks' ImageSegmenter for .tflite files.
import * as ort from "/assets/ort/ort.wasm.min.mjs";
import { FilesetResolver, ImageSegmenter } from "/assets/mediapipe/vision_bundle.mjs";

const ARRAYS = { float32: Float32Array, uint8: Uint8Array, int8: Int8Array };

export function environment() {
  const brand = (navigator.userAgentData?.brands || []).find((b) => /Chrom/.test(b.brand));
  return {
    user_agent: navigator.userAgent,
    browser_version: brand ? brand.version : null,
    cross_origin_isolated: self.crossOriginIsolated === true,
    hardware_concurrency: navigator.hardwareConcurrency,
    onnxruntime_web: ort.env.versions?.web || ort.env.versions?.common || null,
  };
}

export async function openOnnx(url, threads) {
  ort.env.wasm.wasmPaths = "/assets/ort/";
  // Threads need SharedArrayBuffer, which only a cross-origin isolated page has. No count:
  // onnxruntime-web's own default (half the cores, at most 4).
  if (!self.crossOriginIsolated) ort.env.wasm.numThreads = 1;
  else if (threads > 0) ort.env.wasm.numThreads = threads;
  const session = await ort.InferenceSession.create(url, { executionProviders: ["wasm"] });
  return {
    backend: "onnxruntime-web/wasm",
    threads: ort.env.wasm.numThreads,
    inputName: session.inputNames[0],
    outputName: session.outputNames[0],
    tensor(array, dims, dtype) {
      return new ort.Tensor(dtype, array, dims);
    },
    async run(tensor) {
      const results = await session.run({ [this.inputName]: tensor });
      const output = results[this.outputName];
      return { data: output.data, dims: output.dims, dtype: output.type };
    },
    close() { session.release(); },
    ArrayFor: (dtype) => ARRAYS[dtype],
  };
}

export async function openMediaPipe(url) {
  const fileset = await FilesetResolver.forVisionTasks("/assets/mediapipe/wasm");
  const segmenter = await ImageSegmenter.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: url, delegate: "CPU" },
    runningMode: "IMAGE",
    outputCategoryMask: true,
    outputConfidenceMasks: true,
  });
  return {
    backend: "mediapipe-tasks-vision/wasm",
    threads: 1,
    labels: segmenter.getLabels(),
    // Masks are copied out before the result is closed: they live in MediaPipe's memory.
    segment(image) {
      const result = segmenter.segment(image);
      try {
        const category = result.categoryMask ? result.categoryMask.getAsUint8Array().slice() : null;
        const confidence = (result.confidenceMasks || []).map((m) => m.getAsFloat32Array().slice());
        const width = result.categoryMask ? result.categoryMask.width : image.width;
        const height = result.categoryMask ? result.categoryMask.height : image.height;
        return { category, confidence, width, height };
      } finally {
        result.close();
      }
    },
    close() { segmenter.close(); },
  };
}

export function percentile(sorted, q) {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index];
}
