// The Vercel AI SDK's openai() provider (Responses API), unmodified, against Myriad.
// Usage: node vercel_ai.mjs BASE_URL KEY  -> prints one JSON line of observations.
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, apiKey] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const out = {};

const plain = await generateText({ model: openai("fast"), prompt: "Hello from the AI SDK" });
out.text = plain.text;
out.usage = { inputTokens: plain.usage.inputTokens, outputTokens: plain.usage.outputTokens };

const streamed = streamText({ model: openai("fast"), prompt: "Hello from the AI SDK" });
let acc = "";
for await (const delta of streamed.textStream) acc += delta;
out.streamed = acc;

const weather = tool({
  description: "weather for a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `22C and sunny in ${city}`,
});
const withTools = await generateText({
  model: openai("fast"), tools: { get_weather: weather }, stopWhen: stepCountIs(3),
  prompt: "please call get_weather for Paris",
});
out.toolCalls = withTools.steps[0].toolCalls.map((c) => ({ toolName: c.toolName, input: c.input }));
out.afterTool = withTools.text;
out.steps = withTools.steps.length;

const obj = await generateObject({
  model: openai("fast"), prompt: "Describe Paris",
  schema: z.object({ name: z.string(), population: z.number().int(), landmarks: z.array(z.string()) }),
});
out.object = obj.object;
console.log(JSON.stringify(out));
