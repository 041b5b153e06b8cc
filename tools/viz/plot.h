// smallbatch's plotting library, the whole of it: charts rasterized in C++ and written as PNG.
// canvas.h draws (shapes, markers, text) and encodes; font.h rasterizes text; axes.h lays out
// ticks and scales; charts.h holds the line, small-multiples, bar and image-grid charts.
#pragma once

#include "tools/viz/axes.h"
#include "tools/viz/canvas.h"
#include "tools/viz/charts.h"
#include "tools/viz/font.h"
