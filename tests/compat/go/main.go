// Command sluice-compat-go points the official openai-go SDK at the gateway's chat completions,
// used as its README shows, and prints one JSON object of what it saw for
// dataplane/tests/compat.rs to check against the gateway's access log.
//
// Usage: sluice-compat-go BASE_URL KEY MODEL PREFIX
//
//	BASE_URL  e.g. http://127.0.0.1:8080/demo/assistant/v1
//	KEY       a key that may use MODEL
//	MODEL     a chat model with tools
//	PREFIX    prefix of the x-request-id each call sends, so the log can be matched
//
// It exits non-zero, saying why, when the SDK cannot do what it must.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func usageOf(u openai.CompletionUsage) usage {
	return usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
}

type answer struct {
	Content      string `json:"content"`
	FinishReason string `json:"finish_reason"`
	usage
}

type streamed struct {
	answer
	Chunks int `json:"chunks"`
}

type toolCall struct {
	FinishReason string         `json:"finish_reason"`
	Name         string         `json:"name"`
	Arguments    map[string]any `json:"arguments"`
	usage
}

type apiError struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Type   string `json:"type"`
}

type seen struct {
	Create     answer   `json:"create"`
	Stream     streamed `json:"stream"`
	Tool       toolCall `json:"tool"`
	ToolResult answer   `json:"tool_result"`
	NotFound   apiError `json:"not_found"`
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: sluice-compat-go BASE_URL KEY MODEL PREFIX")
	}
	baseURL, key, model, prefix := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	client := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(key), option.WithMaxRetries(0))
	ctx := context.Background()
	withID := func(name string) option.RequestOption { return option.WithHeader("x-request-id", prefix+"-"+name) }
	var out seen

	// A completion cut short by its token limit.
	completion, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.DeveloperMessage("You are terse."),
			openai.UserMessage("Say hello in five words."),
		},
		Model:               model,
		MaxCompletionTokens: openai.Int(5),
	}, withID("create"))
	check(err, "create")
	if len(completion.Choices) != 1 || completion.Choices[0].Message.Content == "" {
		fail("create: no content in %s", completion.RawJSON())
	}
	out.Create = answer{completion.Choices[0].Message.Content, completion.Choices[0].FinishReason, usageOf(completion.Usage)}

	// Streaming with the usage chunk, accumulated by the SDK's helper.
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a short story.")},
		Model:               model,
		MaxCompletionTokens: openai.Int(6),
		StreamOptions:       openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, withID("stream"))
	acc := openai.ChatCompletionAccumulator{}
	text := ""
	chunks := 0
	for stream.Next() {
		chunk := stream.Current()
		acc.AddChunk(chunk)
		chunks++
		if len(chunk.Choices) > 0 {
			text += chunk.Choices[0].Delta.Content
		}
	}
	check(stream.Err(), "stream")
	_ = stream.Close()
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != text || text == "" {
		fail("stream: the accumulator disagrees with the chunks: %q vs %+v", text, acc.Choices)
	}
	if acc.Usage.CompletionTokens == 0 {
		fail("stream: include_usage brought no usage")
	}
	out.Stream = streamed{answer{text, acc.Choices[0].FinishReason, usageOf(acc.Usage)}, chunks}

	// Function calling: the model calls the tool, then answers from its result.
	params := openai.ChatCompletionNewParams{
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{
			openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
				Name:        "get_weather",
				Description: openai.String("Get the current weather in a city."),
				Parameters: openai.FunctionParameters{
					"type": "object",
					"properties": map[string]any{
						"city": map[string]string{"type": "string"},
					},
					"required": []string{"city"},
				},
			}),
		},
		Model: model,
	}
	called, err := client.Chat.Completions.New(ctx, params, withID("tool"))
	check(err, "tool")
	toolCalls := called.Choices[0].Message.ToolCalls
	if len(toolCalls) != 1 {
		fail("tool: expected one tool call in %s", called.RawJSON())
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(toolCalls[0].Function.Arguments), &args); err != nil {
		fail("tool: arguments %q are not a JSON object: %v", toolCalls[0].Function.Arguments, err)
	}
	out.Tool = toolCall{called.Choices[0].FinishReason, toolCalls[0].Function.Name, args, usageOf(called.Usage)}
	params.Messages = append(params.Messages, called.Choices[0].Message.ToParam())
	params.Messages = append(params.Messages, openai.ToolMessage("18 degrees and sunny", toolCalls[0].ID))
	answered, err := client.Chat.Completions.New(ctx, params, withID("tool-result"))
	check(err, "tool-result")
	out.ToolResult = answer{answered.Choices[0].Message.Content, answered.Choices[0].FinishReason, usageOf(answered.Usage)}

	// An error arrives as *openai.Error.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		Model:    "no-such-model",
	}, withID("not-found"))
	var apierr *openai.Error
	if !errors.As(err, &apierr) {
		fail("not-found: expected *openai.Error, got %v", err)
	}
	out.NotFound = apiError{apierr.StatusCode, apierr.Code, apierr.Type}

	encoded, err := json.Marshal(out)
	check(err, "encode")
	fmt.Println(string(encoded))
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
