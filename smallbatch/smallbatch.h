// The umbrella header: all of smallbatch's public API in one include,
// #include <smallbatch/smallbatch.h>, in the source tree and installed alike.
#pragma once

// core: tensors, autograd, the generic differentiable ops, state dicts, errors, threads
#include "core/autograd.h"
#include "core/errors.h"
#include "core/ops.h"
#include "core/state_dict.h"
#include "core/tensor.h"
#include "core/threads.h"

// core/io: the file formats: safetensors, atomic files and folder locks, PNG/JPEG images
#include "core/io/fileio.h"
#include "core/io/image.h"
#include "core/io/safetensors.h"

// layers: the Module system, the layers built on it and the ops of each layer family
#include "layers/conv/ops.h"
#include "layers/conv2d.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/loss/ops.h"
#include "layers/losses.h"
#include "layers/module.h"
#include "layers/norm/batch_norm.h"
#include "layers/norm/batch_renorm.h"
#include "layers/norm/evo_norm.h"
#include "layers/norm/group_norm.h"
#include "layers/norm/norm.h"
#include "layers/norm/ops.h"
#include "layers/pair.h"
#include "layers/pool/ops.h"
#include "layers/sequential.h"
#include "layers/simple.h"

// optim: optimizers, schedules, gradient clipping
#include "optim/optimizer.h"
#include "optim/schedule.h"

// models: unet-s, unet, fcn and the registry by name
#include "models/fcn.h"
#include "models/registry.h"
#include "models/unet.h"

// datasets: the Dataset interface, the DataLoader, transforms, the built-in and on-disk sets
#include "datasets/dataset.h"
#include "datasets/folder.h"
#include "datasets/image_io.h"
#include "datasets/loader.h"
#include "datasets/shapes.h"
#include "datasets/stats.h"
#include "datasets/transforms.h"
