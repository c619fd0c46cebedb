// Greedy replies from node-llama-cpp's own prebuilt llama.cpp: a runtime gguf-sleep did not build,
// for checking that its outputs load and behave the same elsewhere.
//
// Reads one JSON object on stdin:
//   {"model": PATH, "lora": PATH?, "max_tokens": N, "threads": N?,
//    "items": [{"tokens": [id, ...]} | {"user": TEXT, "system": TEXT?}, ...]}
// "tokens" items are evaluated exactly as given (the rendering gguf-sleep uses); "user" items go
// through node-llama-cpp's own chat wrapper (its rendering, with no system turn unless given).
// Writes one JSON object on stdout:
//   {"runtime", "version", "llama_cpp_release", "chat_wrapper", "replies": [{"text", "tokens"}]}
// Any failure is one line on stderr and exit status 1.

import {readFileSync} from "node:fs";
import {getLlama, LlamaChatSession} from "node-llama-cpp";

async function main() {
    const spec = JSON.parse(readFileSync(0, "utf8"));
    const maxTokens = spec.max_tokens ?? 48;
    const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
    const model = await llama.loadModel({modelPath: spec.model});
    const contextOptions = {contextSize: 2048, threads: spec.threads ?? 2};
    if (spec.lora) contextOptions.lora = {adapters: [{filePath: spec.lora, scale: 1}]};
    const replies = [];
    let wrapper = null;
    for (const item of spec.items) {
        const context = await model.createContext(contextOptions);
        const sequence = context.getSequence();
        if (item.tokens) {
            const tokens = [];
            for await (const token of sequence.evaluate(item.tokens, {temperature: 0})) {
                if (model.isEogToken(token)) break;
                tokens.push(token);
                if (tokens.length >= maxTokens) break;
            }
            replies.push({text: model.detokenize(tokens), tokens});
        } else {
            const session = new LlamaChatSession({
                contextSequence: sequence,
                ...(item.system !== undefined ? {systemPrompt: item.system} : {}),
            });
            wrapper = session.chatWrapper.constructor.name;
            const text = await session.prompt(item.user, {temperature: 0, maxTokens});
            replies.push({text, tokens: null});
        }
        await context.dispose();
    }
    const pkg = JSON.parse(readFileSync(new URL("./node_modules/node-llama-cpp/package.json", import.meta.url), "utf8"));
    process.stdout.write(JSON.stringify({
        runtime: "node-llama-cpp",
        version: pkg.version,
        llama_cpp_release: llama.llamaCppRelease.release,
        chat_wrapper: wrapper,
        replies,
    }) + "\n");
    await model.dispose();
    await llama.dispose();
}

main().catch((e) => {
    process.stderr.write(`node-llama-cpp: ${String(e?.message ?? e).split("\n")[0]}\n`);
    process.exit(1);
});
