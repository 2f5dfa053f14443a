/* The C API from plain C: loading, tokenising, evaluation, sampling, state round trips and
 * error reporting, on the demo model (argv[1]). Prints "N passed, M failed"; exit status 1
 * on any failure. */
#define _POSIX_C_SOURCE 200809L /* mkstemp, close */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rwkv/rwkv.h"

static int n_passed = 0, n_failed = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      ++n_passed;                                                              \
    } else {                                                                   \
      ++n_failed;                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

/* Checks a call returns RWKV_OK and shows the last error when it does not. */
#define CHECK_OK(call)                                                                                           \
  do {                                                                                                           \
    rwkv_status check_status_ = (call);                                                                          \
    if (check_status_ == RWKV_OK) {                                                                              \
      ++n_passed;                                                                                                \
    } else {                                                                                                     \
      ++n_failed;                                                                                                \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, rwkv_status_name(check_status_), \
              rwkv_last_error());                                                                                \
    }                                                                                                            \
  } while (0)

static int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

/* Largest |a - b| over n floats. */
static float max_abs_diff(const float* a, const float* b, size_t n) {
  float worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const float d = fabsf(a[i] - b[i]);
    if (!(d <= worst)) worst = d; /* NaN counts as a difference */
  }
  return worst;
}

static void test_errors_without_model(void) {
  CHECK(rwkv_api_version() == RWKV_API_VERSION);
  CHECK(strcmp(rwkv_status_name(RWKV_ERR_STATE), "state") == 0);

  rwkv_model* model = (rwkv_model*)&model; /* must be reset to NULL on failure */
  rwkv_model_params params = rwkv_model_default_params();
  params.backend = "cpu";
  CHECK(rwkv_model_load("/nonexistent-dir/missing-model.gguf", &params, &model) == RWKV_ERR_IO);
  CHECK(model == NULL);
  CHECK(strstr(rwkv_last_error(), "missing-model.gguf") != NULL);

  params.n_slots = 0;
  CHECK(rwkv_model_load("/nonexistent-dir/missing-model.gguf", &params, &model) == RWKV_ERR_ARGUMENT);
  CHECK(strstr(rwkv_last_error(), "n_slots") != NULL);

  rwkv_sampler_params sp = rwkv_sampler_default_params();
  rwkv_sampler* sampler = NULL;
  sp.top_p = 1.5f;
  CHECK(rwkv_sampler_new(&sp, &sampler) == RWKV_ERR_ARGUMENT);
  CHECK(sampler == NULL && strstr(rwkv_last_error(), "top_p") != NULL);
  CHECK(rwkv_eval(NULL, 0, NULL, 0, NULL) == RWKV_ERR_ARGUMENT);
}

static void test_tokenizer(const rwkv_model* model) {
  const int32_t expected[4] = {631, 309, 841, 1313};
  int32_t ids[8];
  size_t n = 0;
  CHECK(rwkv_tokenize(model, "The jury said", NULL, 0, &n) == RWKV_ERR_BUFFER_TOO_SMALL);
  CHECK(n == 4);
  n = 0;
  CHECK(rwkv_tokenize(model, "The jury said", ids, 2, &n) == RWKV_ERR_BUFFER_TOO_SMALL);
  CHECK(n == 4);
  CHECK_OK(rwkv_tokenize(model, "The jury said", ids, 8, &n));
  CHECK(n == 4 && memcmp(ids, expected, sizeof(expected)) == 0);

  char text[32];
  size_t len = 0;
  CHECK(rwkv_detokenize(model, ids, n, text, 5, &len) == RWKV_ERR_BUFFER_TOO_SMALL);
  CHECK(len == strlen("The jury said"));
  CHECK_OK(rwkv_detokenize(model, ids, n, text, sizeof(text), &len));
  CHECK(strcmp(text, "The jury said") == 0);
  const int32_t bad_id = 1 << 20;
  CHECK(rwkv_detokenize(model, &bad_id, 1, text, sizeof(text), &len) == RWKV_ERR_ARGUMENT);
}

/* Evaluates the prompt, samples greedily and checks every state operation against simply
 * continuing the sequence. */
static void test_eval_and_state(rwkv_model* model, const char* state_path) {
  rwkv_info info;
  CHECK_OK(rwkv_model_info(model, &info));
  CHECK(info.n_slots == 3 && info.head_size * info.n_head == info.n_embd);
  CHECK(info.state_size == rwkv_state_size(model));
  CHECK(info.state_size == (size_t)info.n_layer * (2 * (size_t)info.n_embd + (size_t)info.n_embd * info.head_size));
  CHECK(strcmp(info.backend, "cpu") == 0);
  const size_t V = (size_t)info.n_vocab, S = info.state_size;

  int32_t prompt[16];
  size_t n_prompt = 0;
  CHECK_OK(rwkv_tokenize(model, "The jury said", prompt, 16, &n_prompt));

  float* logits = malloc(V * sizeof(float));
  float* all = malloc(n_prompt * V * sizeof(float));
  float* continued = malloc(V * sizeof(float));
  float* restored = malloc(V * sizeof(float));
  float* batch = malloc(2 * V * sizeof(float));
  float* state = malloc(S * sizeof(float));
  float* state2 = malloc(S * sizeof(float));

  CHECK_OK(rwkv_eval(model, 0, prompt, n_prompt, logits));
  CHECK_OK(rwkv_eval_all(model, 1, prompt, n_prompt, all));
  CHECK(max_abs_diff(all + (n_prompt - 1) * V, logits, V) < 1e-3f);

  /* Greedy without penalties is the argmax. */
  rwkv_sampler_params sp = rwkv_sampler_default_params();
  sp.temperature = 0;
  sp.presence_penalty = 0;
  sp.frequency_penalty = 0;
  rwkv_sampler* sampler = NULL;
  CHECK_OK(rwkv_sampler_new(&sp, &sampler));
  int32_t next = -1;
  CHECK_OK(rwkv_sampler_sample(sampler, logits, info.n_vocab, &next));
  CHECK(next == argmax(logits, info.n_vocab));
  CHECK_OK(rwkv_sampler_accept(sampler, next));

  /* Save after the prompt, continue slot 0 with the sampled token, then load the file into
   * slot 2 and continue it the same way: the logits must agree. */
  CHECK_OK(rwkv_state_save(model, 0, state_path));
  CHECK_OK(rwkv_state_get(model, 0, state, S));
  CHECK_OK(rwkv_eval(model, 0, &next, 1, continued));
  CHECK_OK(rwkv_state_load(model, 2, state_path));
  CHECK_OK(rwkv_state_get(model, 2, state2, S));
  CHECK(memcmp(state, state2, S * sizeof(float)) == 0);
  CHECK_OK(rwkv_eval(model, 2, &next, 1, restored));
  CHECK(max_abs_diff(continued, restored, V) < 1e-4f);

  /* A decoded token changes the logits (the state is live), and a reset slot 1 fed the
   * prompt again matches slot 0's prompt logits. */
  CHECK(max_abs_diff(continued, logits, V) > 1e-3f);
  CHECK_OK(rwkv_state_reset(model, 1));
  CHECK_OK(rwkv_eval(model, 1, prompt, n_prompt, restored));
  CHECK(max_abs_diff(restored, logits, V) < 1e-4f);

  /* set + clone, then one batched step for slots 1 and 2 from the saved state. */
  CHECK_OK(rwkv_state_set(model, 1, state, S));
  CHECK_OK(rwkv_state_clone(model, 1, 2));
  const int32_t slots[2] = {1, 2}, tokens[2] = {next, next};
  CHECK_OK(rwkv_decode_batch(model, slots, tokens, 2, batch));
  CHECK(max_abs_diff(batch, continued, V) < 1e-4f);
  CHECK(max_abs_diff(batch + V, continued, V) < 1e-4f);
  /* The same step into the model's own logits buffer. */
  float* fast = NULL;
  CHECK_OK(rwkv_logits_buffer(model, 2, &fast));
  CHECK(fast != NULL);
  CHECK_OK(rwkv_state_set(model, 1, state, S));
  CHECK_OK(rwkv_state_clone(model, 1, 2));
  if (fast) {
    CHECK_OK(rwkv_decode_batch(model, slots, tokens, 2, fast));
    CHECK(max_abs_diff(fast, batch, 2 * V) == 0.0f);
  }
  CHECK(rwkv_logits_buffer(model, 0, &fast) == RWKV_ERR_ARGUMENT);

  /* Bad arguments name what is wrong and change nothing. */
  CHECK(rwkv_eval(model, 3, prompt, n_prompt, NULL) == RWKV_ERR_ARGUMENT);
  CHECK(strstr(rwkv_last_error(), "slot 3") != NULL);
  const int32_t bad_token = info.n_vocab;
  CHECK(rwkv_eval(model, 0, &bad_token, 1, NULL) == RWKV_ERR_ARGUMENT);
  CHECK(strstr(rwkv_last_error(), "tokens[0]") != NULL);
  const int32_t twice[2] = {1, 1};
  CHECK(rwkv_decode_batch(model, twice, tokens, 2, NULL) == RWKV_ERR_ARGUMENT);
  CHECK(rwkv_state_get(model, 0, state, S - 1) == RWKV_ERR_ARGUMENT);

  /* A file that is not a state is refused and leaves the slot as it was. */
  FILE* f = fopen(state_path, "wb");
  CHECK(f != NULL);
  if (f) {
    fputs("not a state file", f);
    fclose(f);
  }
  CHECK_OK(rwkv_state_get(model, 2, state, S));
  CHECK(rwkv_state_load(model, 2, state_path) == RWKV_ERR_STATE);
  CHECK(strstr(rwkv_last_error(), state_path) != NULL);
  CHECK_OK(rwkv_state_get(model, 2, state2, S));
  CHECK(memcmp(state, state2, S * sizeof(float)) == 0);

  rwkv_sampler_free(sampler);
  free(logits);
  free(all);
  free(continued);
  free(restored);
  free(batch);
  free(state);
  free(state2);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
    return 2;
  }
  test_errors_without_model();

  rwkv_model_params params = rwkv_model_default_params();
  params.backend = "cpu";
  params.n_threads = 2;
  params.n_slots = 3;
  rwkv_model* model = NULL;
  CHECK_OK(rwkv_model_load(argv[1], &params, &model));
  if (model) {
    test_tokenizer(model);
    char state_path[] = "/tmp/rwkv_c_api_test_XXXXXX";
    const int fd = mkstemp(state_path);
    CHECK(fd >= 0);
    if (fd >= 0) {
      close(fd);
      test_eval_and_state(model, state_path);
      remove(state_path);
    }
    rwkv_model_free(model);
  }
  printf("%d passed, %d failed\n", n_passed, n_failed);
  return n_failed == 0 ? 0 : 1;
}
